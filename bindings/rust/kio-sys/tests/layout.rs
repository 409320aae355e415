//! The Rust declarations must have the C layouts exactly. Two checks:
//!
//! 1. against values hardcoded for 64-bit Linux (x86_64, aarch64: LP64), so
//!    the test means something even without a C compiler;
//! 2. against the C compiler itself: a tiny program including kio.h prints
//!    sizeof, alignment and offsetof of every struct and field and the value
//!    of every constant, and each must equal Rust's. Skipped (with a note)
//!    only if no C compiler runs; KIO_SYS_REQUIRE_CC=1 makes that a failure.

use kio_sys::*;
use std::collections::BTreeMap;
use std::mem::{align_of, offset_of, size_of};
use std::path::PathBuf;
use std::process::Command;

/// (name, value) of every size, alignment, offset and constant, as Rust sees
/// them. Names are those the C program prints.
fn rust_values() -> Vec<(String, i64)> {
    let mut v: Vec<(String, i64)> = Vec::new();
    macro_rules! layout {
        ($ty:ident, $cname:expr, [$($field:ident),* $(,)?]) => {
            v.push((format!("sizeof {}", $cname), size_of::<$ty>() as i64));
            v.push((format!("alignof {}", $cname), align_of::<$ty>() as i64));
            $( v.push((format!("offsetof {}.{}", $cname, stringify!($field)), offset_of!($ty, $field) as i64)); )*
        };
    }
    macro_rules! constant {
        ($($c:ident),* $(,)?) => { $( v.push((stringify!($c).to_string(), $c as i64)); )* };
    }
    layout!(
        kio_options,
        "kio_options",
        [size, threads, stack_size, backend, dump_signal, stall_ns, debug_flags]
    );
    layout!(kio_spawn_options, "kio_spawn_options", [size, name, stack_size, pinned, arg_destructor]);
    layout!(kio_mutex, "kio_mutex", [opaque_]);
    layout!(kio_cond, "kio_cond", [opaque_]);
    layout!(kio_cq_event, "kio_cq_event", [user_data, result]);
    layout!(
        kio_stats,
        "struct kio_stats",
        [size, workers, tasks_live, tasks_ready, switches, steals, parks, stack_reserved, stack_committed]
    );
    layout!(iovec, "struct iovec", [iov_base, iov_len]);
    layout!(
        msghdr,
        "struct msghdr",
        [msg_name, msg_namelen, msg_iov, msg_iovlen, msg_control, msg_controllen, msg_flags]
    );
    layout!(sockaddr, "struct sockaddr", [sa_family, sa_data]);
    layout!(sockaddr_storage, "struct sockaddr_storage", []);
    v.push(("sizeof kio_fn".into(), size_of::<kio_fn>() as i64));
    v.push(("sizeof ssize_t".into(), size_of::<ssize_t>() as i64));
    v.push(("sizeof off_t".into(), size_of::<off_t>() as i64));
    v.push(("sizeof socklen_t".into(), size_of::<socklen_t>() as i64));
    v.push(("sizeof mode_t".into(), size_of::<mode_t>() as i64));
    v.push(("sizeof sa_family_t".into(), size_of::<sa_family_t>() as i64));
    constant!(
        KIO_VERSION_MAJOR,
        KIO_VERSION_MINOR,
        KIO_VERSION_PATCH,
        KIO_DEBUG_MIGRATE,
        KIO_PARK_SLEEP,
        KIO_PARK_MUTEX,
        KIO_PARK_COND,
        KIO_PARK_AWAIT,
        KIO_PARK_SELECT,
        KIO_PARK_IO,
        KIO_PARK_BLOCKING,
        KIO_PARK_OTHER,
        KIO_PARK_KINDS
    );
    v
}

/// The C side: every line of rust_values() as a printf of the C expression.
fn c_program() -> String {
    let mut body = String::new();
    for (name, _) in rust_values() {
        let expr = if let Some(ty) = name.strip_prefix("sizeof ") {
            format!("sizeof({ty})")
        } else if let Some(ty) = name.strip_prefix("alignof ") {
            // C99 has no _Alignof: the offset of a T after a char is its alignment.
            format!("offsetof(struct {{ char c; {ty} t; }}, t)")
        } else if let Some(f) = name.strip_prefix("offsetof ") {
            let (ty, field) = f.rsplit_once('.').unwrap();
            format!("offsetof({ty}, {field})")
        } else {
            name.clone()
        };
        body.push_str(&format!("    printf(\"%s=%lld\\n\", \"{name}\", (long long)({expr}));\n"));
    }
    format!(
        "#include <stddef.h>\n#include <stdio.h>\n#include <sys/types.h>\n#include <sys/socket.h>\n\
         #include <sys/uio.h>\n#include <kio.h>\n\nint main(void) {{\n{body}    return 0;\n}}\n"
    )
}

#[test]
fn layouts_match_lp64_linux() {
    if !(cfg!(target_os = "linux") && cfg!(target_pointer_width = "64") && cfg!(not(target_env = "musl"))) {
        eprintln!("layouts_match_lp64_linux: not 64-bit Linux/glibc, hardcoded values skipped");
        return;
    }
    let expected: &[(&str, i64)] = &[
        ("sizeof kio_options", 56),
        ("alignof kio_options", 8),
        ("offsetof kio_options.size", 0),
        ("offsetof kio_options.threads", 8),
        ("offsetof kio_options.stack_size", 16),
        ("offsetof kio_options.backend", 24),
        ("offsetof kio_options.dump_signal", 32),
        ("offsetof kio_options.stall_ns", 40),
        ("offsetof kio_options.debug_flags", 48),
        ("sizeof kio_spawn_options", 40),
        ("alignof kio_spawn_options", 8),
        ("offsetof kio_spawn_options.size", 0),
        ("offsetof kio_spawn_options.name", 8),
        ("offsetof kio_spawn_options.stack_size", 16),
        ("offsetof kio_spawn_options.pinned", 24),
        ("offsetof kio_spawn_options.arg_destructor", 32),
        ("sizeof kio_mutex", 32),
        ("alignof kio_mutex", 8),
        ("sizeof kio_cond", 24),
        ("alignof kio_cond", 8),
        ("sizeof kio_cq_event", 16),
        ("offsetof kio_cq_event.result", 8),
        ("sizeof struct kio_stats", 128),
        ("offsetof struct kio_stats.workers", 8),
        ("offsetof struct kio_stats.tasks_live", 16),
        ("offsetof struct kio_stats.tasks_ready", 24),
        ("offsetof struct kio_stats.switches", 32),
        ("offsetof struct kio_stats.steals", 40),
        ("offsetof struct kio_stats.parks", 48),
        ("offsetof struct kio_stats.stack_reserved", 112),
        ("offsetof struct kio_stats.stack_committed", 120),
        ("sizeof struct iovec", 16),
        ("sizeof struct msghdr", 56),
        ("offsetof struct msghdr.msg_flags", 48),
        ("sizeof struct sockaddr", 16),
        ("sizeof struct sockaddr_storage", 128),
        ("alignof struct sockaddr_storage", 8),
        ("sizeof kio_fn", 8),
        ("sizeof off_t", 8),
        ("sizeof mode_t", 4),
        ("KIO_PARK_KINDS", 8),
        ("KIO_DEBUG_MIGRATE", 1),
    ];
    let rust: BTreeMap<String, i64> = rust_values().into_iter().collect();
    for (name, want) in expected {
        assert_eq!(rust.get(*name), Some(want), "{name}");
    }
}

#[test]
fn layouts_match_c_compiler() {
    let required = std::env::var_os("KIO_SYS_REQUIRE_CC").is_some_and(|v| v == "1");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("kio-sys-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("layout.c");
    let exe = dir.join("layout");
    std::fs::write(&src, c_program()).unwrap();

    let include = env!("KIO_SYS_INCLUDE_DIR");
    let mut cmd = Command::new(&cc);
    cmd.arg("-std=c99").arg("-Wall").arg("-Werror");
    if !include.is_empty() {
        cmd.arg("-I").arg(include);
    }
    cmd.arg(&src).arg("-o").arg(&exe);
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) => {
            assert!(!required, "cannot run C compiler `{cc}`: {e}");
            eprintln!("layouts_match_c_compiler: skipped, cannot run `{cc}`: {e}");
            return;
        }
    };
    assert!(
        out.status.success(),
        "compiling the layout program failed (include dir {include:?}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&exe).output().expect("run the layout program");
    assert!(out.status.success());
    let c: BTreeMap<String, i64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once('=').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect();
    let rust = rust_values();
    assert_eq!(c.len(), rust.len());
    let mut bad = Vec::new();
    for (name, r) in &rust {
        if c[name] != *r {
            bad.push(format!("{name}: C {} vs Rust {r}", c[name]));
        }
    }
    assert!(bad.is_empty(), "layout mismatches:\n{}", bad.join("\n"));
    eprintln!("layouts_match_c_compiler: {} values agree with {cc}", rust.len());
    let _ = std::fs::remove_dir_all(&dir);
}
