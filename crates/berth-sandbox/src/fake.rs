//! A recording fake [`Engine`] for unit tests: it remembers every call and plays a scripted
//! container (exit code, output, start failure, hang, OOM).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_engine::{
    BuildEvent, ByteStream, ContainerPlan, ContainerState, ContainerSummary, Engine, EngineError,
    EngineInfo, ImageInfo, NetworkPlan, NetworkSummary, Output, OutputStream, VolumePlan,
    VolumeSummary,
};
use bytes::Bytes;
use tokio::sync::Notify;

#[derive(Debug, Clone)]
pub enum Call {
    Create(Box<ContainerPlan>),
    Attach,
    Start,
    Wait,
    Kill,
    Remove { force: bool },
    Inspect,
    List,
    NetworkCreate(NetworkPlan),
    NetworkRemove,
    NetworkList,
}

#[derive(Clone, Copy)]
enum Script {
    Exit(i64),
    FailStart,
    Hang,
    Oom,
}

pub struct FakeEngine {
    calls: Mutex<Vec<Call>>,
    script: Script,
    stdout: &'static [u8],
    stderr: &'static [u8],
    start_error: &'static str,
    killed: Arc<Notify>,
    pub containers: Mutex<Vec<ContainerSummary>>,
    pub networks: Mutex<Vec<NetworkSummary>>,
}

impl FakeEngine {
    fn new(script: Script) -> Self {
        Self {
            calls: Mutex::new(Vec::new()),
            script,
            stdout: b"",
            stderr: b"",
            start_error: "",
            killed: Arc::new(Notify::new()),
            containers: Mutex::new(Vec::new()),
            networks: Mutex::new(Vec::new()),
        }
    }

    pub fn exiting(code: i64, stdout: &'static [u8], stderr: &'static [u8]) -> Self {
        Self {
            stdout,
            stderr,
            ..Self::new(Script::Exit(code))
        }
    }

    pub fn failing_start(message: &'static str) -> Self {
        Self {
            start_error: message,
            ..Self::new(Script::FailStart)
        }
    }

    pub fn hanging() -> Self {
        Self::new(Script::Hang)
    }

    pub fn oom() -> Self {
        Self::new(Script::Oom)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn record(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }
}

impl Engine for FakeEngine {
    async fn info(&self) -> Result<EngineInfo, EngineError> {
        Ok(EngineInfo::default())
    }

    async fn image_inspect(&self, _reference: &str) -> Result<Option<ImageInfo>, EngineError> {
        Ok(Some(ImageInfo::default()))
    }

    async fn image_build(
        &self,
        _context: Bytes,
        _tag: &str,
        _labels: &[(String, String)],
        _progress: &(dyn Fn(BuildEvent) + Send + Sync),
    ) -> Result<ImageInfo, EngineError> {
        Ok(ImageInfo::default())
    }

    async fn image_pull(
        &self,
        reference: &str,
        _progress: &(dyn Fn(BuildEvent) + Send + Sync),
    ) -> Result<ImageInfo, EngineError> {
        Err(EngineError::ImageNotFound {
            image: reference.to_string(),
        })
    }

    async fn container_create(&self, plan: &ContainerPlan) -> Result<String, EngineError> {
        self.record(Call::Create(Box::new(plan.clone())));
        Ok("c1".to_string())
    }

    async fn container_attach(&self, _id: &str) -> Result<OutputStream, EngineError> {
        self.record(Call::Attach);
        let items = vec![
            Ok(Output::Stdout(Bytes::from_static(self.stdout))),
            Ok(Output::Stderr(Bytes::from_static(self.stderr))),
        ];
        Ok(Box::pin(futures_util::stream::iter(items)))
    }

    async fn container_start(&self, id: &str) -> Result<(), EngineError> {
        self.record(Call::Start);
        match self.script {
            Script::FailStart => Err(EngineError::StartFailed {
                id: id.to_string(),
                message: self.start_error.to_string(),
            }),
            _ => Ok(()),
        }
    }

    async fn container_wait(&self, _id: &str) -> Result<i64, EngineError> {
        self.record(Call::Wait);
        match self.script {
            Script::Exit(code) => Ok(code),
            Script::Oom => Ok(137),
            Script::FailStart => Ok(0),
            Script::Hang => {
                self.killed.notified().await;
                Ok(137)
            }
        }
    }

    async fn container_kill(&self, _id: &str, _signal: &str) -> Result<(), EngineError> {
        self.record(Call::Kill);
        self.killed.notify_waiters();
        // Let the waiter observe the notification even if it registers a moment later.
        let killed = self.killed.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            killed.notify_waiters();
        });
        Ok(())
    }

    async fn container_stop(&self, _id: &str, _grace: Duration) -> Result<(), EngineError> {
        Ok(())
    }

    async fn container_pause(&self, _id: &str) -> Result<(), EngineError> {
        Ok(())
    }

    async fn container_unpause(&self, _id: &str) -> Result<(), EngineError> {
        Ok(())
    }

    async fn container_remove(&self, _id: &str, force: bool) -> Result<(), EngineError> {
        self.record(Call::Remove { force });
        Ok(())
    }

    async fn container_inspect(&self, id: &str) -> Result<ContainerState, EngineError> {
        self.record(Call::Inspect);
        Ok(ContainerState {
            id: id.to_string(),
            oom_killed: matches!(self.script, Script::Oom),
            ..Default::default()
        })
    }

    async fn container_list(
        &self,
        _labels: &[String],
    ) -> Result<Vec<ContainerSummary>, EngineError> {
        self.record(Call::List);
        Ok(self.containers.lock().unwrap().clone())
    }

    async fn container_logs(&self, _id: &str, _follow: bool) -> Result<OutputStream, EngineError> {
        Ok(Box::pin(futures_util::stream::empty()))
    }

    async fn archive_upload(&self, _id: &str, _path: &str, _tar: Bytes) -> Result<(), EngineError> {
        Ok(())
    }

    async fn archive_download(&self, _id: &str, _path: &str) -> Result<ByteStream, EngineError> {
        Ok(Box::pin(futures_util::stream::empty()))
    }

    async fn container_exec_attached(
        &self,
        _id: &str,
        _argv: &[String],
    ) -> Result<(OutputStream, berth_engine::ExecInput), EngineError> {
        Err(EngineError::Transport {
            operation: "exec",
            message: "the fake engine has no exec".to_string(),
        })
    }

    async fn network_create(&self, plan: &NetworkPlan) -> Result<String, EngineError> {
        self.record(Call::NetworkCreate(plan.clone()));
        Ok("n1".to_string())
    }

    async fn network_connect(&self, _network: &str, _container: &str) -> Result<(), EngineError> {
        Ok(())
    }

    async fn network_remove(&self, _id: &str) -> Result<(), EngineError> {
        self.record(Call::NetworkRemove);
        Ok(())
    }

    async fn network_list(&self, _labels: &[String]) -> Result<Vec<NetworkSummary>, EngineError> {
        self.record(Call::NetworkList);
        Ok(self.networks.lock().unwrap().clone())
    }

    async fn volume_create(&self, _plan: &VolumePlan) -> Result<(), EngineError> {
        Ok(())
    }

    async fn volume_remove(&self, _name: &str) -> Result<(), EngineError> {
        Ok(())
    }

    async fn volume_list(&self, _labels: &[String]) -> Result<Vec<VolumeSummary>, EngineError> {
        Ok(Vec::new())
    }
}
