//! The Docker Engine API client, on bollard: connect to the socket and negotiate the API
//! version, list running containers, inspect one, and follow container events, and the network
//! events that give a running container an address or take it away (`docker network connect`,
//! `disconnect`: no container event says so).
//!
//! Nothing is missed between the listing and the events: the listing starts after an instant
//! taken first, and the event stream is asked for every event since that instant (dockerd
//! keeps recent events and replays them), so a container that starts or stops while the
//! listing runs is seen again as an event. Handling an event twice is harmless: a start is
//! re-inspected, a stop removes what is already gone.
use std::{collections::HashMap, path::Path, time::SystemTime};

use bollard::{
    API_DEFAULT_VERSION, Docker,
    models::{EventMessage, EventMessageTypeEnum},
    query_parameters::{EventsOptions, ListContainersOptions},
};
use futures::{Stream, StreamExt as _};

use super::container::Container;

/// How long a request may take to be answered (not the event stream, which stays open).
const REQUEST_TIMEOUT_SECS: u64 = 10;

/// The container events that change what is published.
const CONTAINER_EVENTS: [&str; 4] = ["start", "die", "destroy", "rename"];
/// The network events that do: `docker network connect`/`disconnect` give a running container
/// an address, or take it away, with no container event.
const NETWORK_EVENTS: [&str; 2] = ["connect", "disconnect"];

/// Why talking to dockerd failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("connecting to the Docker API at {socket}")]
    Connect {
        socket: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("Docker API {what}")]
    Request {
        what: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("the Docker event stream ended")]
    EventsEnded,
}

/// A container event that changes what is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The container started (or restarted): inspect it.
    Started(String),
    /// The container stopped or was removed: withdraw its forwards.
    Stopped(String),
    /// The container was renamed: inspect it for its new name.
    Renamed(String),
    /// The container was connected to a network: inspect it for its address there (another
    /// container may hold its old one by now).
    Connected(String),
    /// The container was disconnected from the network named `network`: its address there is
    /// gone.
    Disconnected { id: String, network: String },
}

/// A connection to dockerd with the API version negotiated.
pub struct Engine {
    docker: Docker,
    /// The negotiated API version, e.g. `1.41`.
    pub api_version: String,
    /// Docker's version, e.g. `20.10.24+dfsg1`.
    pub engine_version: String,
}

impl Engine {
    /// Connects to the Engine API on `socket` and negotiates the version: the lower of
    /// bollard's and dockerd's (a client asking for a newer version than dockerd speaks gets
    /// HTTP 400).
    pub async fn connect(socket: &Path) -> Result<Engine, EngineError> {
        let path = socket.to_string_lossy().into_owned();
        let connect_err = |source| EngineError::Connect {
            socket: path.clone(),
            source,
        };
        let docker = Docker::connect_with_unix(&path, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
            .map_err(connect_err)?
            .negotiate_version()
            .await
            .map_err(connect_err)?;
        let version = docker.version().await.map_err(connect_err)?;
        Ok(Engine {
            api_version: docker.client_version().to_string(),
            engine_version: version.version.unwrap_or_default(),
            docker,
        })
    }

    /// Every running container, inspected.
    pub async fn running(&self) -> Result<Vec<Container>, EngineError> {
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions::default()))
            .await
            .map_err(|source| EngineError::Request {
                what: "GET /containers/json".into(),
                source,
            })?;
        let mut out = Vec::with_capacity(list.len());
        for id in list.into_iter().filter_map(|c| c.id) {
            // Gone between the listing and now: its events follow.
            if let Some(c) = self.inspect(&id).await? {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// One container by id; `None` when dockerd no longer knows it (404 after a removal).
    pub async fn inspect(&self, id: &str) -> Result<Option<Container>, EngineError> {
        match self.docker.inspect_container(id, None).await {
            Ok(r) => Ok(Container::from_inspect(&r)),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(source) => Err(EngineError::Request {
                what: format!("GET /containers/{id}/json"),
                source,
            }),
        }
    }

    /// Container events since `since` (see the module docs), as they come.
    pub fn events(
        &self,
        since: SystemTime,
    ) -> impl Stream<Item = Result<Event, EngineError>> + Unpin + use<> {
        let since = since
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let filters = HashMap::from([
            (
                "type".to_owned(),
                vec!["container".to_owned(), "network".to_owned()],
            ),
            (
                "event".to_owned(),
                CONTAINER_EVENTS
                    .iter()
                    .chain(&NETWORK_EVENTS)
                    .map(|e| (*e).to_owned())
                    .collect(),
            ),
        ]);
        let options = EventsOptions {
            since: Some(format!("{}.{:09}", since.as_secs(), since.subsec_nanos())),
            until: None,
            filters: Some(filters),
        };
        self.docker
            .events(Some(options))
            .filter_map(|m| async move {
                match m {
                    Err(source) => Some(Err(EngineError::Request {
                        what: "GET /events".into(),
                        source,
                    })),
                    Ok(m) => event_of(m).map(Ok),
                }
            })
            .boxed()
    }
}

/// What an event of the stream means to the follower; `None` for those that change nothing.
fn event_of(m: EventMessage) -> Option<Event> {
    let actor = m.actor?;
    let action = m.action.as_deref()?;
    match m.typ? {
        EventMessageTypeEnum::CONTAINER => {
            let id = actor.id?;
            match action {
                "start" => Some(Event::Started(id)),
                "die" | "destroy" => Some(Event::Stopped(id)),
                "rename" => Some(Event::Renamed(id)),
                _ => None,
            }
        }
        // The actor is the network; the container and the network's name are attributes.
        EventMessageTypeEnum::NETWORK => {
            let mut attributes = actor.attributes?;
            let id = attributes.remove("container")?;
            match action {
                "connect" => Some(Event::Connected(id)),
                "disconnect" => Some(Event::Disconnected {
                    id,
                    network: attributes.remove("name").unwrap_or_default(),
                }),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> EventMessage {
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    #[test]
    fn a_containers_life_as_dockerd_20_10_streams_it() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/docker/events.jsonl"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let events: Vec<Event> = text.lines().filter_map(|l| event_of(parse(l))).collect();
        let id = parse(text.lines().next().unwrap())
            .actor
            .unwrap()
            .id
            .unwrap();
        assert_eq!(
            events,
            vec![
                Event::Started(id.clone()),
                Event::Stopped(id.clone()),
                Event::Stopped(id)
            ]
        );
    }

    #[test]
    fn network_connect_and_disconnect_name_the_container() {
        let event = |action: &str| {
            format!(
                r#"{{"Type":"network","Action":"{action}","Actor":{{"ID":"n1","Attributes":{{"container":"c1","name":"bridge","type":"bridge"}}}},"scope":"local","time":1,"timeNano":1}}"#
            )
        };
        assert_eq!(
            event_of(parse(&event("connect"))),
            Some(Event::Connected("c1".into()))
        );
        assert_eq!(
            event_of(parse(&event("disconnect"))),
            Some(Event::Disconnected {
                id: "c1".into(),
                network: "bridge".into()
            })
        );
        // A network's own life changes no container.
        assert_eq!(event_of(parse(&event("destroy"))), None);
    }
}
