//! The `velox` binary's library: configuration, keys, genesis, the tile
//! pipeline of a validator, its HTTP API, the load generator and the local
//! devnet launcher. Algorithms live in the library crates (exec, mempool,
//! net, io, storage); this crate wires them by topology.

pub mod api;
pub mod cli;
pub mod committee;
pub mod config;
pub mod consensus;
pub mod devnet;
pub mod genesis;
pub mod httpc;
pub mod join;
pub mod keys;
pub mod load;
pub mod maintenance;
pub mod pipeline;
pub mod progress;
pub mod proof;
pub mod replay;
pub mod run;
