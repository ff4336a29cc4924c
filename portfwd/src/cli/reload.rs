//! `portfwd reload`
use std::path::Path;

use crate::api::{Request, Response};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
The daemon re-reads its config file and applies the difference (SIGHUP and saving the file do \
the same). An invalid file is rejected with its file, line and field, the running state is left \
exactly as it was, and this command exits 1 with that message.")]
pub struct Args {}

pub fn run(socket: &Path, _args: Args) -> Result<(), super::Failure> {
    match super::call(socket, &Request::Reload)? {
        Response::Done { message } => super::output::println(&message),
        r => Err(super::unexpected(&r)),
    }
}
