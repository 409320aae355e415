// Go competitor for the kio core benchmarks (see bench/README.md).
//
//	go build -o core_bench . && ./core_bench -w <workload> [-n N] [-r reps]
//
// Workloads: yield spawn_await spawn_await_batch skynet mutex pingpong idle
// sleep. GOMAXPROCS is 1 for yield (two goroutines on one P, like kio's
// single worker), 2 for mutex, and the default (the CPU count) for the rest,
// unless -procs overrides it.
//
// Idioms (documented in bench/README.md):
//   - spawn_await: every goroutine gets a buffered channel of size 1 and sends
//     its result on it; the spawner receives (a future, like kio_await, which
//     also returns the task's result).
//   - spawn_await_batch: 1000 goroutines write their results into a slice and
//     call WaitGroup.Done; the spawner waits on the WaitGroup per batch.
//   - skynet: the classic channel version (one unbuffered channel per node).
//   - pingpong: two unbuffered channels, ping -> pong -> ping.
//   - idle: goroutines blocked receiving from one channel that is closed to
//     release them.
//   - sleep: time.Sleep + WaitGroup.
//
// Every workload verifies its result and prints one line
//
//	RESULT workload=... system=go value=... unit=... check=ok|FAIL
//
// with the median of -r timed runs after one untimed warm-up run (idle: one
// cold run per process; the runner takes the median over processes).
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func report(workload string, value float64, unit string, ok bool) {
	check := "ok"
	if !ok {
		check = "FAIL"
	}
	prec := 2
	if value >= 1000 {
		prec = 0
	}
	fmt.Printf("RESULT workload=%s system=go value=%.*f unit=%s check=%s\n", workload, prec, value, unit, check)
}

// measure runs fn once untimed, then reps times, and reports the median.
func measure(workload, unit string, reps int, fn func() (float64, bool)) {
	_, ok := fn()
	vals := make([]float64, 0, reps)
	for r := 0; r < reps; r++ {
		v, runOK := fn()
		ok = ok && runOK
		vals = append(vals, v)
	}
	sort.Float64s(vals)
	report(workload, vals[len(vals)/2], unit, ok)
}

func nsPer(d time.Duration, ops uint64) float64 { return float64(d.Nanoseconds()) / float64(ops) }

// ---------------------------------------------------------------- yield ---

func runYield(n uint64) (float64, bool) {
	var wg sync.WaitGroup
	var doneA, doneB uint64
	worker := func(done *uint64) {
		defer wg.Done()
		for i := uint64(0); i < n; i++ {
			runtime.Gosched()
			*done++
		}
	}
	start := time.Now()
	wg.Add(2)
	go worker(&doneA)
	go worker(&doneB)
	wg.Wait()
	el := time.Since(start)
	return nsPer(el, 2*n), doneA == n && doneB == n
}

// ---------------------------------------------------------- spawn/await ---

func runSpawnAwait(n uint64) (float64, bool) {
	bad := 0
	start := time.Now()
	for i := uint64(0); i < n; i++ {
		ch := make(chan uint64, 1)
		go func(i uint64) { ch <- i + 1 }(i)
		if <-ch != i+1 {
			bad++
		}
	}
	el := time.Since(start)
	return nsPer(el, n), bad == 0
}

func runSpawnAwaitBatch(n uint64) (float64, bool) {
	const batch = 1000
	res := make([]uint64, batch)
	bad := 0
	start := time.Now()
	for done := uint64(0); done < n; {
		k := uint64(batch)
		if n-done < k {
			k = n - done
		}
		var wg sync.WaitGroup
		wg.Add(int(k))
		for j := uint64(0); j < k; j++ {
			go func(j, i uint64) {
				res[j] = i + 1
				wg.Done()
			}(j, done+j)
		}
		wg.Wait()
		for j := uint64(0); j < k; j++ {
			if res[j] != done+j+1 {
				bad++
			}
		}
		done += k
	}
	el := time.Since(start)
	return nsPer(el, n), bad == 0
}

// ---------------------------------------------------------------- skynet ---

func skynet(c chan<- uint64, num, size, div uint64) {
	if size == 1 {
		c <- num
		return
	}
	rc := make(chan uint64)
	var sum uint64
	for i := uint64(0); i < div; i++ {
		subNum := num + i*(size/div)
		go skynet(rc, subNum, size/div, div)
	}
	for i := uint64(0); i < div; i++ {
		sum += <-rc
	}
	c <- sum
}

func runSkynet(leaves uint64) (float64, bool) {
	start := time.Now()
	c := make(chan uint64)
	go skynet(c, 0, leaves, 10)
	sum := <-c
	el := time.Since(start)
	ok := sum == leaves*(leaves-1)/2
	if !ok {
		fmt.Fprintf(os.Stderr, "skynet: sum %d\n", sum)
	}
	return float64(el.Nanoseconds()) / 1e6, ok
}

// ---------------------------------------------------------------- mutex ---

func runMutex(n uint64) (float64, bool) {
	const tasks = 8
	var mu sync.Mutex
	var counter uint64
	var wg sync.WaitGroup
	start := time.Now()
	wg.Add(tasks)
	for t := 0; t < tasks; t++ {
		go func() {
			defer wg.Done()
			for i := uint64(0); i < n; i++ {
				mu.Lock()
				counter++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	return nsPer(el, tasks*n), counter == tasks*n
}

// ------------------------------------------------------------- pingpong ---

func runPingpong(n uint64) (float64, bool) {
	ping := make(chan uint64)
	pong := make(chan uint64)
	bad := uint64(0)
	var wg sync.WaitGroup
	wg.Add(1)
	start := time.Now()
	go func() {
		defer wg.Done()
		for i := uint64(0); i < n; i++ {
			v := <-ping
			if v != 2*i+1 {
				bad++
			}
			pong <- v + 1
		}
	}()
	var last uint64
	for i := uint64(0); i < n; i++ {
		ping <- 2*i + 1
		last = <-pong
		if last != 2*i+2 {
			bad++
		}
	}
	wg.Wait()
	el := time.Since(start)
	return nsPer(el, n), bad == 0 && last == 2*n
}

// ----------------------------------------------------------------- idle ---

func rssBytes() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := s.Text()
		if strings.HasPrefix(line, "VmRSS:") {
			fields := strings.Fields(line[6:])
			if len(fields) > 0 {
				kb, err := strconv.ParseInt(fields[0], 10, 64)
				if err == nil {
					return kb * 1024
				}
			}
		}
	}
	return -1
}

func runIdle(n uint64) {
	gate := make(chan struct{})
	var parked, finished int64
	var wg sync.WaitGroup
	wg.Add(int(n))
	before := rssBytes()
	for i := uint64(0); i < n; i++ {
		go func() {
			atomic.AddInt64(&parked, 1)
			<-gate
			atomic.AddInt64(&finished, 1)
			wg.Done()
		}()
	}
	// Wait until every goroutine has started and is (about to be) blocked.
	for atomic.LoadInt64(&parked) != int64(n) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(10 * time.Millisecond) // let the last ones reach the receive
	after := rssBytes()
	close(gate)
	wg.Wait()
	ok := before > 0 && after > 0 && finished == int64(n)
	report("idle", float64(after-before)/float64(n), "bytes/task", ok)
}

// ---------------------------------------------------------------- sleep ---

func runSleep(n uint64) (float64, bool) {
	var wg sync.WaitGroup
	var early, finished int64
	start := time.Now()
	wg.Add(int(n))
	for i := uint64(0); i < n; i++ {
		go func() {
			s := time.Now()
			time.Sleep(10 * time.Millisecond)
			if time.Since(s) < 10*time.Millisecond {
				atomic.AddInt64(&early, 1)
			}
			atomic.AddInt64(&finished, 1)
			wg.Done()
		}()
	}
	wg.Wait()
	el := time.Since(start)
	return float64(el.Nanoseconds()) / 1e6, finished == int64(n) && early == 0
}

func main() {
	w := flag.String("w", "", "workload: yield spawn_await spawn_await_batch skynet mutex pingpong idle sleep")
	nFlag := flag.Uint64("n", 0, "iterations (0 = workload default)")
	reps := flag.Int("r", 3, "timed repetitions (median reported)")
	procs := flag.Int("procs", 0, "GOMAXPROCS (0 = workload default)")
	flag.Parse()
	if *reps < 1 {
		fmt.Fprintln(os.Stderr, "-r must be >= 1")
		os.Exit(2)
	}
	nOr := func(d uint64) uint64 {
		if *nFlag != 0 {
			return *nFlag
		}
		return d
	}
	setProcs := func(d int) {
		if *procs > 0 {
			d = *procs
		}
		if d > 0 {
			runtime.GOMAXPROCS(d)
		}
	}
	switch *w {
	case "yield":
		setProcs(1)
		n := nOr(2000000)
		measure("yield", "ns/op", *reps, func() (float64, bool) { return runYield(n) })
	case "spawn_await":
		setProcs(0)
		n := nOr(1000000)
		measure("spawn_await", "ns/op", *reps, func() (float64, bool) { return runSpawnAwait(n) })
	case "spawn_await_batch":
		setProcs(0)
		n := nOr(1000000)
		measure("spawn_await_batch", "ns/op", *reps, func() (float64, bool) { return runSpawnAwaitBatch(n) })
	case "skynet":
		setProcs(0)
		n := nOr(1000000)
		p := uint64(1)
		for p < n {
			p *= 10
		}
		if p != n {
			fmt.Fprintln(os.Stderr, "skynet: -n must be a power of 10")
			os.Exit(2)
		}
		measure("skynet", "ms", *reps, func() (float64, bool) { return runSkynet(n) })
	case "mutex":
		setProcs(2)
		n := nOr(1000000)
		measure("mutex", "ns/op", *reps, func() (float64, bool) { return runMutex(n) })
	case "pingpong":
		setProcs(0)
		n := nOr(1000000)
		measure("pingpong", "ns/op", *reps, func() (float64, bool) { return runPingpong(n) })
	case "idle":
		setProcs(0)
		runIdle(nOr(100000))
	case "sleep":
		setProcs(0)
		n := nOr(100000)
		measure("sleep", "ms", *reps, func() (float64, bool) { return runSleep(n) })
	default:
		fmt.Fprintln(os.Stderr, "unknown workload; use -w yield|spawn_await|spawn_await_batch|skynet|mutex|pingpong|idle|sleep")
		os.Exit(2)
	}
}
