module kio/bench/io/go_echo

go 1.19
