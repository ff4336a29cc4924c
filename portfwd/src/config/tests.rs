//! Helpers for the tests of the config files.

use std::path::Path;

use super::{Config, parse_str};
use crate::publish::Forward;

/// The file name in the messages of [`error`].
pub(crate) const FILE: &str = "/etc/portfwd/test.yaml";

/// The config in `text`, which must parse.
pub(crate) fn parse(text: &str) -> Config {
    parse_str(text, Path::new(FILE)).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// The whole error message for `text`, which must not parse.
pub(crate) fn error(text: &str) -> String {
    match parse_str(text, Path::new(FILE)) {
        Ok(config) => panic!("parsed as {config:?}:\n{text}"),
        Err(e) => e.to_string(),
    }
}

pub(crate) fn fwd(s: &str) -> Forward {
    s.parse().unwrap()
}
