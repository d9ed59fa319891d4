//! The agent's request decoding: any bytes as each request message, and a decoded exec start
//! turned into what `execve` gets. Nothing may panic; a bad request is an error.
#![no_main]

use berth_agent::identity::Identity;
use berth_protocol::v1::{
    exec_input, AttachRequest, ExecInput, PathRequest, RemoveRequest, RenameRequest, SignalRequest,
    UploadChunk, WriteStdinRequest,
};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let identity = Identity {
        sandbox_id: "fuzz".into(),
        token: "t".into(),
        uid: 1000,
        gid: 1000,
        workdir: "/workspace".into(),
        owned_dirs: Vec::new(),
        base_env: [("PATH".to_string(), "/usr/bin:/bin".to_string())].into(),
    };
    if let Ok(ExecInput {
        input: Some(exec_input::Input::Start(start)),
    }) = ExecInput::decode(data)
    {
        if let Ok(spec) = berth_agent::exec::spawn_spec(&identity, &start, 1) {
            let _ = berth_agent::spawn::ExecImage::new(&spec);
        }
    }
    let _ = UploadChunk::decode(data);
    let _ = AttachRequest::decode(data);
    let _ = SignalRequest::decode(data);
    let _ = WriteStdinRequest::decode(data);
    let _ = RemoveRequest::decode(data);
    if let Ok(r) = RenameRequest::decode(data) {
        let _ = (
            berth_agent::files::confine(&r.from),
            berth_agent::files::confine(&r.to),
        );
    }
    if let Ok(p) = PathRequest::decode(data) {
        let _ = berth_agent::files::confine(&p.path);
    }
});
