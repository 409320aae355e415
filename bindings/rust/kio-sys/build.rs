//! Finds libkio for the linker, without any crate:
//!
//! 1. `KIO_LIB_DIR`: a directory holding libkio.so (a meson build directory
//!    or `<prefix>/lib/...`), used as is;
//! 2. otherwise `pkg-config --libs-only-L --libs-only-l kio` (kio.pc comes
//!    with `meson install`; set `PKG_CONFIG_PATH=<libdir>/pkgconfig` for a
//!    private prefix). `PKG_CONFIG` names another pkg-config binary.
//!
//! Neither working is a build error that says what to set. The directory
//! found is passed on to dependents as `DEP_KIO_LIB_DIR` (`links = "kio"`).
//!
//! The header used by the layout test (tests/layout.rs) is found the same
//! way: `KIO_INCLUDE_DIR`, else `pkg-config --cflags-only-I kio`, else the
//! source tree's include/ next to bindings/; it reaches the test as the
//! compile-time variable KIO_SYS_INCLUDE_DIR (empty if none was found).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=KIO_LIB_DIR");
    println!("cargo:rerun-if-env-changed=KIO_INCLUDE_DIR");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_LIBDIR");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_SYSROOT_DIR");

    let lib_dirs = match env::var_os("KIO_LIB_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if !has_library(&dir) {
                fail(&format!(
                    "KIO_LIB_DIR={} holds no libkio ({}); point it at the directory \
                     that contains the built library (e.g. the meson build directory)",
                    dir.display(),
                    lib_names().join(", ")
                ));
            }
            println!("cargo:rustc-link-search=native={}", dir.display());
            println!("cargo:rustc-link-lib=dylib=kio");
            vec![dir]
        }
        None => match pkg_config(&["--libs-only-L", "--libs-only-l", "kio"]) {
            Ok(out) => link_from_pkg_config(&out),
            Err(why) => fail(&format!(
                "cannot find libkio: KIO_LIB_DIR is not set and pkg-config failed: {why}.\n\
                 Either set KIO_LIB_DIR to the directory holding libkio.so (e.g. \
                 KIO_LIB_DIR=/path/to/kio/build), or install kio (`meson install`) and make \
                 kio.pc visible to pkg-config (PKG_CONFIG_PATH=<libdir>/pkgconfig)."
            )),
        },
    };
    if let Some(dir) = lib_dirs.first() {
        println!("cargo:lib_dir={}", dir.display());
    }

    let include = include_dir().map(|p| p.display().to_string()).unwrap_or_default();
    println!("cargo:include={include}");
    println!("cargo:rustc-env=KIO_SYS_INCLUDE_DIR={include}");
}

fn fail(msg: &str) -> ! {
    // cargo::error= needs a newer cargo than many systems have; the stderr of
    // a failed build script is shown by every cargo.
    eprintln!("error: kio-sys: {msg}");
    std::process::exit(1);
}

fn lib_names() -> Vec<String> {
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    match target_os.as_str() {
        "macos" | "ios" => vec!["libkio.dylib".into()],
        "windows" => vec!["kio.lib".into(), "kio.dll.a".into()],
        _ => vec!["libkio.so".into()],
    }
}

fn has_library(dir: &Path) -> bool {
    lib_names().iter().any(|n| dir.join(n).exists())
}

fn pkg_config(args: &[&str]) -> Result<String, String> {
    let prog = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into());
    let out = Command::new(&prog).args(args).output().map_err(|e| format!("could not run `{prog}`: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("`{prog} {}` exited with {}: {}", args.join(" "), out.status, err.trim()));
    }
    String::from_utf8(out.stdout).map_err(|_| format!("`{prog}` printed non-UTF-8 output"))
}

/// Emits the link flags of `pkg-config --libs-only-L --libs-only-l kio`;
/// returns the -L directories.
fn link_from_pkg_config(out: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut have_kio = false;
    for flag in out.split_whitespace() {
        if let Some(dir) = flag.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
            dirs.push(PathBuf::from(dir));
        } else if let Some(lib) = flag.strip_prefix("-l") {
            have_kio |= lib == "kio";
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
    }
    if !have_kio {
        // kio.pc always names -lkio; make sure the library is linked anyway.
        println!("cargo:rustc-link-lib=dylib=kio");
    }
    dirs
}

fn include_dir() -> Option<PathBuf> {
    if let Some(dir) = env::var_os("KIO_INCLUDE_DIR").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    if env::var_os("KIO_LIB_DIR").filter(|v| !v.is_empty()).is_none() {
        if let Ok(out) = pkg_config(&["--cflags-only-I", "kio"]) {
            for flag in out.split_whitespace() {
                if let Some(dir) = flag.strip_prefix("-I") {
                    if Path::new(dir).join("kio.h").exists() {
                        return Some(PathBuf::from(dir));
                    }
                }
            }
        }
    }
    // In the kio source tree: bindings/rust/kio-sys -> include/.
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR")?);
    let tree = manifest.join("../../../include");
    if tree.join("kio.h").exists() {
        tree.canonicalize().ok()
    } else {
        None
    }
}
