//! `correlator new module NAME` / `correlator new handler NAME`: a crate of
//! its own, outside any repository, that builds to a working component
//! with one command, with unit tests that run natively and (for a module)
//! a test file that `correlator test` runs against the built component.
//!
//! Everything comes from inside this binary, so it works offline: the
//! templates, and the guest SDK's sources and WIT contract, which are
//! written into the crate (`vendor/correlator-sdk`) so that it builds
//! without this repository.

use anyhow::{Context as _, bail};
use std::path::Path;

include!(concat!(env!("OUT_DIR"), "/sdk_files.rs"));

/// What to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A logic module.
    Module,
    /// An event handler.
    Handler,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Module => "module",
            Kind::Handler => "handler",
        }
    }
}

/// Make crate `name` in `parent` (a new directory `name` there).
pub fn create(kind: Kind, name: &str, parent: &Path) -> anyhow::Result<()> {
    check_name(name)?;
    let root = parent.join(name);
    if root.exists() {
        bail!(
            "{} exists already; give another name, or remove it",
            root.display()
        );
    }
    let crate_file = name.replace('-', "_");
    let camel: String = name
        .split(['-', '_'])
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect();
    let version = env!("CARGO_PKG_VERSION");
    let fill = |template: &str| {
        template
            .replace("{name}", name)
            .replace("{crate}", &crate_file)
            .replace("{camel}", &camel)
            .replace("{version}", version)
            .replace("{kind}", kind.word())
            .replace("{rust}", "1.95")
    };
    let app_example = match kind {
        Kind::Module => format!(
            "[modules.{camel}]\ncomponent = \"{name}/target/wasm32-wasip2/release/{crate_file}.wasm\"\nconfig = {{ program = \"sshd\", pattern = \"Failed password\" }}\n\n[handlers.console]\ncomponent = \"builtin:log\""
        ),
        Kind::Handler => format!(
            "[modules.OpenSSH]\ncomponent = \"builtin:sshd\"\n\n[handlers.{camel}]\ncomponent = \"{name}/target/wasm32-wasip2/release/{crate_file}.wasm\"\nconfig = {{ prefix = \"alert\" }}\ngrants = {{ dir = \"alerts\" }}"
        ),
    };
    let test_note = match kind {
        Kind::Module => {
            "\n`tests/{name}.test.toml` holds cases `correlator test` runs against the\nbuilt component in isolation, with records from `tests/fixtures/`: each\ncase names the component, its configuration, its records and the events\nexpected. `correlator test --help` tells the format.\n"
        }
        Kind::Handler => {
            "\n`tests/{name}.test.toml` holds cases `correlator test` runs against the\nbuilt component in isolation: each case names the component, its\nconfiguration and grants, events (`tests/fixtures/events.jsonl`, JSON\nlines as the log handler writes them with format = \"json\", or inline)\nand what the handler must have written in its granted directory\n(`expect_file`) or would have sent (`expect_request`, `expect_mail`:\ncaptured, never sent). `correlator test --help` tells the format.\n"
        }
    };
    let readme = fill(include_str!("../../templates/README.md"))
        .replace("{app_example}", &app_example)
        .replace("{test_note}", &fill(test_note));
    let mut files: Vec<(String, String)> = vec![
        ("README.md".into(), readme),
        (
            ".cargo/config.toml".into(),
            fill(include_str!("../../templates/cargo-config.toml")),
        ),
        (".gitignore".into(), "/target\nCargo.lock\n".into()),
        (
            "vendor/correlator-sdk/Cargo.toml".into(),
            fill(include_str!("../../templates/sdk-Cargo.toml")),
        ),
    ];
    for (path, text) in SDK_FILES {
        files.push((format!("vendor/correlator-sdk/{path}"), (*text).to_owned()));
    }
    // The kind's own templates: its manifest, its code, its test file and
    // the fixture that file reads.
    let (manifest, code, test_file, (fixture_path, fixture)) = match kind {
        Kind::Module => (
            include_str!("../../templates/module/Cargo.toml"),
            include_str!("../../templates/module/lib.rs"),
            include_str!("../../templates/module/test.toml"),
            (
                "tests/fixtures/auth.log",
                include_str!("../../templates/module/auth.log"),
            ),
        ),
        Kind::Handler => (
            include_str!("../../templates/handler/Cargo.toml"),
            include_str!("../../templates/handler/lib.rs"),
            include_str!("../../templates/handler/test.toml"),
            (
                "tests/fixtures/events.jsonl",
                include_str!("../../templates/handler/events.jsonl"),
            ),
        ),
    };
    files.extend([
        ("Cargo.toml".into(), fill(manifest)),
        ("src/lib.rs".into(), fill(code)),
        (format!("tests/{name}.test.toml"), fill(test_file)),
        (fixture_path.into(), fixture.to_owned()),
    ]);
    for (path, text) in &files {
        let path = root.join(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot make {}", dir.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!(
        "made {} {name} in {}: cd {name} && cargo build --release{}",
        kind.word(),
        root.display(),
        match kind {
            Kind::Module | Kind::Handler => " && correlator test",
        }
    );
    Ok(())
}

/// A crate name: lowercase ASCII letters, digits, `-` and `_`, starting with
/// a letter.
fn check_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(|first| first.is_ascii_lowercase());
    if !starts_with_letter
        || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        || name.len() > 64
    {
        bail!(
            "{name:?} is not a crate name this makes: lowercase letters, digits, - and _, starting with a letter, at most 64 characters"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_crate_names() {
        assert!(check_name("ssh-brute").is_ok());
        assert!(check_name("transmission_done2").is_ok());
        for bad in ["", "2fast", "Upper", "has space", "../escape", "a/b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_sdk_is_embedded_whole() {
        let paths: Vec<&str> = SDK_FILES.iter().map(|(path, _)| *path).collect();
        for expected in [
            "src/lib.rs",
            "src/testing.rs",
            "wit/host.wit",
            "wit/deps/logging/logging.wit",
        ] {
            assert!(paths.contains(&expected), "{expected} in {paths:?}");
        }
    }
}
