//! Builds the bundled components (`modules/*`) for `wasm32-wasip2` and
//! embeds them, so that `builtin:NAME` works wherever the binary goes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

/// (builtin name, package) of every bundled component.
const BUILTINS: [(&str, &str); 8] = [
    ("sshd", "correlator-module-sshd"),
    ("report", "correlator-module-report"),
    ("log", "correlator-module-log"),
    ("csv", "correlator-module-csv"),
    ("blocklist", "correlator-module-blocklist"),
    ("webhook", "correlator-module-webhook"),
    ("sms", "correlator-module-sms"),
    ("email", "correlator-module-email"),
];

/// (name, package) of the guests the integration tests use; built from
/// source like the builtins, never committed as binaries.
const TEST_GUESTS: [(&str, &str); 10] = [
    ("schema-breaker", "correlator-test-schema-breaker"),
    ("hostile", "correlator-test-hostile"),
    ("hostile-fs", "correlator-test-hostile-fs"),
    ("hostile-net", "correlator-test-hostile-net"),
    ("hostile-handler", "correlator-test-hostile-handler"),
    ("hostile-http", "correlator-test-hostile-http"),
    ("hostile-block", "correlator-test-hostile-block"),
    ("counter-v1", "correlator-test-counter-v1"),
    ("counter-v2", "correlator-test-counter-v2"),
    ("plain-handler", "correlator-test-plain-handler"),
];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .expect("runtime/ lives in the workspace")
        .to_owned();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for watched in ["guest-sdk", "modules", "tests/guests", "wit", "Cargo.lock"] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }

    let target_dir = workspace.join("target").join("guests");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&workspace)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .env("CARGO_TARGET_DIR", &target_dir)
        // Small, fast guests; no debug info in what we embed.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        // The outer build's flags and wrappers (clippy, coverage) are for
        // the host, not for the guests.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_BUILD_TARGET");
    for (_, package) in BUILTINS.iter().chain(&TEST_GUESTS) {
        command.args(["-p", package]);
    }
    let status = command
        .status()
        .expect("cannot run cargo to build the bundled components");
    if !status.success() {
        panic!(
            "building the bundled components for wasm32-wasip2 failed (see above); \
             if the target is missing, run: rustup target add wasm32-wasip2"
        );
    }

    let mut table = String::from(
        "/// (name, component bytes) of every bundled component.\npub const BUILTINS: &[(&str, &[u8])] = &[\n",
    );
    for (name, package) in BUILTINS {
        let file = format!("{}.wasm", package.replace('-', "_"));
        let built = target_dir.join("wasm32-wasip2").join("release").join(&file);
        let embedded = out_dir.join(format!("{name}.wasm"));
        copy_if_changed(&built, &embedded);
        table.push_str(&format!(
            "    (\"{name}\", include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{name}.wasm\"))),\n"
        ));
    }
    table.push_str("];\n");
    let release = target_dir.join("wasm32-wasip2").join("release");
    for (name, package) in TEST_GUESTS {
        let variable = format!(
            "CORRELATOR_TEST_GUEST_{}",
            name.to_uppercase().replace('-', "_")
        );
        let path = release.join(format!("{}.wasm", package.replace('-', "_")));
        println!("cargo:rustc-env={variable}={}", path.display());
    }
    fs::write(out_dir.join("builtins.rs"), table).expect("cannot write builtins.rs");
    embed_sdk(&workspace, &out_dir);
}

/// `sdk_files.rs`: every file of the guest SDK's sources and of the WIT
/// contract, for `correlator new` to write into a new crate.
fn embed_sdk(workspace: &Path, out_dir: &Path) {
    let mut files = Vec::new();
    collect(&workspace.join("guest-sdk").join("src"), "src", &mut files);
    collect(&workspace.join("wit"), "wit", &mut files);
    files.sort();
    let mut table = String::from(
        "/// (path in the SDK crate, text) of every file of the guest SDK.\npub const SDK_FILES: &[(&str, &str)] = &[\n",
    );
    for (relative, path) in files {
        table.push_str(&format!(
            "    ({relative:?}, include_str!({:?})),\n",
            path.display().to_string()
        ));
    }
    table.push_str("];\n");
    fs::write(out_dir.join("sdk_files.rs"), table).expect("cannot write sdk_files.rs");
}

/// Every file under `dir`, as (path under `prefix`, path).
fn collect(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) {
    let entries =
        fs::read_dir(dir).unwrap_or_else(|error| panic!("cannot read {}: {error}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .expect("UTF-8 file names")
            .to_owned();
        let relative = format!("{prefix}/{name}");
        if path.is_dir() {
            collect(&path, &relative, out);
        } else {
            out.push((relative, path));
        }
    }
}

fn copy_if_changed(from: &Path, to: &Path) {
    let bytes =
        fs::read(from).unwrap_or_else(|error| panic!("cannot read {}: {error}", from.display()));
    if fs::read(to).ok().as_deref() != Some(bytes.as_slice()) {
        fs::write(to, bytes)
            .unwrap_or_else(|error| panic!("cannot write {}: {error}", to.display()));
    }
}
