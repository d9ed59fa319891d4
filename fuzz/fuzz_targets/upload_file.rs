//! Single-file uploads: any name is one path component in the destination or refused, and
//! the file is whole or absent.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &[u8])| {
    let (name, data) = input;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let root = tempfile::tempdir().unwrap();
    let dest = root.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let Ok(file) = berth_agent::files::single_file_name(name) else {
        return;
    };
    let Ok(staged) =
        berth_agent::files::stage_file(&dest, &file, [bytes::Bytes::copy_from_slice(data)])
    else {
        return;
    };
    // Before the commit nothing is in place under the name.
    assert!(std::fs::symlink_metadata(dest.join(&file)).is_err());
    if staged.commit(0o644, 0, (0, 0)).is_ok() {
        assert_eq!(std::fs::read(dest.join(&file)).unwrap(), data);
    }
    let entries: Vec<_> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(entries.len() <= 1, "temporary files left: {entries:?}");
    assert_eq!(
        std::fs::read_dir(root.path()).unwrap().count(),
        1,
        "written beside dest"
    );
});
