//! Integration tests: drive the real `pipeline` binary in temporary project directories. Each
//! test mirrors a promise of README; `support` is the kit they share.

mod support;

mod cache;
mod cluster;
mod commands;
mod data;
mod experiments;
mod hostile;
mod model;
mod remote;
mod remote_damage;
