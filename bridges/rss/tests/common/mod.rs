//! Helpers shared by the integration tests: the test HTTP server.

#![allow(dead_code)]

pub mod server;
