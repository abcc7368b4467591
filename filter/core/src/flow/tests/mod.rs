//! The flow's tests, one file per room they exercise, on shared builders
//! (`support`).

mod admission;
mod capture;
mod operations;
mod request;
mod resilience;
mod response;
mod support;
mod translation;
