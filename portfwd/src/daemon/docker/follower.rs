//! The task that follows dockerd: connect and negotiate the API version, list the running
//! containers (and reconcile what is published with them), then apply each container event
//! as it comes. When dockerd cannot be reached or its event stream ends, the forwards stay as
//! they are, and the task reconnects with a growing backoff (logged once per outage, not per
//! try), then reconciles. Idle, it waits on the event stream only: no timer, no polling.
use std::{
    path::PathBuf,
    sync::Weak,
    time::{Duration, Instant, SystemTime},
};

use futures::StreamExt as _;
use tokio::sync::Mutex;

use super::{Link, unix_now};
use crate::{
    daemon::state::State,
    docker::{Container, Engine, EngineError, Event},
    error::chain,
};

/// The first retry after a failure, doubled on each further one up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Events are asked for from this long before the listing (see `docker::engine`).
const REPLAY: Duration = Duration::from_secs(1);

pub(super) fn spawn(state: Weak<Mutex<State>>, socket: PathBuf) -> tokio::task::AbortHandle {
    tokio::spawn(run(state, socket)).abort_handle()
}

async fn run(state: Weak<Mutex<State>>, socket: PathBuf) {
    let mut backoff = BACKOFF_MIN;
    let mut outage_logged = false;
    loop {
        let err = match session(&state, &socket, &mut backoff, &mut outage_logged).await {
            Some(e) => e,
            // The daemon is stopping.
            None => return,
        };
        let Some(state) = state.upgrade() else { return };
        {
            let mut st = state.lock().await;
            let Some(d) = &mut st.docker else { return };
            let message = chain(&err);
            if d.link.connected || !outage_logged {
                tracing::warn!(socket = %socket.display(), "Docker is not answering ({message}); its forwards stay as they are; reconnecting");
                outage_logged = true;
            } else {
                tracing::debug!("Docker: {message}");
            }
            if d.link.connected || d.link.error.is_none() {
                d.link.since = unix_now();
            }
            d.link.connected = false;
            d.link.error = Some(message);
        }
        drop(state);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection: reconcile, then follow events until the connection fails. Returns why it
/// ended, or `None` when the daemon has gone.
async fn session(
    state: &Weak<Mutex<State>>,
    socket: &std::path::Path,
    backoff: &mut Duration,
    outage_logged: &mut bool,
) -> Option<EngineError> {
    let engine = match Engine::connect(socket).await {
        Ok(e) => e,
        Err(e) => return Some(e),
    };
    let since = SystemTime::now() - REPLAY;
    let started = Instant::now();
    let running = match engine.running().await {
        Ok(r) => r,
        Err(e) => return Some(e),
    };
    {
        let state = state.upgrade()?;
        let mut st = state.lock().await;
        let d = st.docker.as_mut()?;
        d.containers = running.into_iter().map(|c| (c.id.clone(), c)).collect();
        d.link = Link {
            connected: true,
            since: unix_now(),
            api_version: Some(engine.api_version.clone()),
            engine_version: Some(engine.engine_version.clone()),
            error: None,
        };
        let containers = d.containers.len();
        st.sync_derived();
        tracing::info!(
            socket = %socket.display(),
            api_version = %engine.api_version,
            engine_version = %engine.engine_version,
            containers,
            took_ms = started.elapsed().as_millis() as u64,
            "{}",
            if *outage_logged { "following Docker again (reconciled)" } else { "following Docker" }
        );
    }
    *backoff = BACKOFF_MIN;
    *outage_logged = false;
    let mut events = engine.events(since);
    loop {
        let event = match events.next().await {
            Some(Ok(ev)) => ev,
            Some(Err(e)) => return Some(e),
            None => return Some(EngineError::EventsEnded),
        };
        let update = match &event {
            // dockerd connects a container to its networks when it creates it, and an inspect
            // then waits until the container has started, holding up every later event: one
            // not running yet is inspected on its `start`. A running one (`docker network
            // connect`) is inspected now.
            Event::Connected(id) if !knows(state, id).await? => continue,
            Event::Started(id) | Event::Renamed(id) | Event::Connected(id) => {
                match engine.inspect(id).await {
                    Ok(c) => Update::Set(id.clone(), c),
                    Err(e) => return Some(e),
                }
            }
            Event::Stopped(id) => Update::Set(id.clone(), None),
            // Not inspected: dockerd disconnects a stopping container after its `die`, and an
            // inspect would wait until it is done with it.
            Event::Disconnected { id, network } => Update::LeftNetwork {
                id: id.clone(),
                network: network.clone(),
            },
        };
        let state = state.upgrade()?;
        let mut st = state.lock().await;
        let d = st.docker.as_mut()?;
        if d.apply(update) {
            st.sync_derived();
        }
    }
}

/// Whether `id` is a running container the daemon knows; `None` when the daemon has gone.
async fn knows(state: &Weak<Mutex<State>>, id: &str) -> Option<bool> {
    let state = state.upgrade()?;
    let st = state.lock().await;
    Some(st.docker.as_ref()?.containers.contains_key(id))
}

/// What an event does to the containers known.
enum Update {
    /// The container is now as inspected (`None`: gone).
    Set(String, Option<Container>),
    /// The container left the network named `network`: if its ports are published there, it
    /// publishes nothing now; it stays known, so that a later `connect` inspects it again.
    LeftNetwork { id: String, network: String },
}

impl super::DockerFollow {
    /// Applies an update; returns whether anything changed.
    fn apply(&mut self, update: Update) -> bool {
        match update {
            Update::Set(id, c) => match c.filter(Container::is_running) {
                Some(c) => self.containers.insert(id, c.clone()).as_ref() != Some(&c),
                None => self.containers.remove(&id).is_some(),
            },
            Update::LeftNetwork { id, network } => match self.containers.get_mut(&id) {
                Some(c) if c.network.as_deref() == Some(network.as_str()) => {
                    c.network = None;
                    c.ipv4 = None;
                    c.ipv6 = None;
                    c.bindings.clear();
                    true
                }
                _ => false,
            },
        }
    }
}
