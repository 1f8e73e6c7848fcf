//! The receiver's HTTP API, driven over loopback like Splunk and Alertmanager drive it.

mod alertmanager;
mod auth;
mod doors;
mod durability;
mod helpers;
mod limits;
mod replicas;
mod splunk;
mod test_mode;
mod unusable;
mod validation;
