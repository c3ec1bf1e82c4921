//! A gRPC inventory service and its client, both built from palisade layers
//! over tonic: see the README beside this crate.
//!
//! - [`warehouse`]: the upstream, a plain tonic server whose answers can be
//!   scripted;
//! - [`server`]: the inventory server's stack, and its breaker-protected
//!   call to the warehouse;
//! - [`client`]: the client stack around a tonic `Channel`.

pub mod client;
pub mod server;
pub mod warehouse;

/// The code generated from `proto/inventory.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    tonic::include_proto!("inventory.v1");
}
