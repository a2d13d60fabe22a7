//! Embedded stand-ins for the services the operator talks to: ECS, STS, the instance metadata service, and an in-process Kubernetes API.

mod access_key;
pub mod ecs_simulator;
pub mod kube_api;
pub mod metadata_simulator;
mod serve;
pub mod sts_simulator;

pub use access_key::{AccessKey, ENV_ACCESS_KEY_ID, ENV_ACCESS_KEY_SECRET, ENV_SECURITY_TOKEN};
