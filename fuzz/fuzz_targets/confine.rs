//! Path confinement: whatever path a caller gives (`..`, links, `/.berth`), an accepted one is
//! absolute, has no `..`, goes through no symbolic link, and is not berth's own.
#![no_main]

use std::path::{Component, Path};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// A directory with links worth going through: dangling into /.berth, relative escapes, a
/// loop, a link to a link.
fn playground() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir(p.join("d")).unwrap();
        for (name, target) in [
            ("berth", "/.berth"),
            ("planted", "/.berth/agent/x"),
            ("up", "../../../../../../../../.berth"),
            ("loop", "loop"),
            ("to-d", "d"),
            ("to-to-d", "to-d"),
            ("abs", "/"),
        ] {
            std::os::unix::fs::symlink(target, p.join(name)).unwrap();
        }
        dir
    })
    .path()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let base = playground();
    for path in [text.to_string(), format!("{}/{text}", base.display())] {
        let Ok(resolved) = berth_agent::files::confine(&path) else {
            continue;
        };
        assert!(resolved.is_absolute(), "{path:?} -> {resolved:?}");
        assert!(
            resolved
                .components()
                .all(|c| !matches!(c, Component::ParentDir | Component::CurDir)),
            "{path:?} -> {resolved:?}"
        );
        assert!(!resolved.starts_with("/.berth"), "{path:?} -> {resolved:?}");
        let mut prefix = std::path::PathBuf::from("/");
        for c in resolved.components().skip(1) {
            prefix.push(c);
            let link = std::fs::symlink_metadata(&prefix).is_ok_and(|m| m.file_type().is_symlink());
            assert!(
                !link,
                "{path:?} -> {resolved:?} goes through the link {prefix:?}"
            );
        }
    }
});
