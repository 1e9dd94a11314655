//! Code shared by the examples, and by the tests that run their code paths.
#![allow(dead_code, unreachable_pub)]

pub mod client;
pub mod echo;
pub mod grpc;
pub mod server;
