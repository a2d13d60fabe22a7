//! Embedded stand-ins for the services the operator talks to: ECS, STS, the instance metadata service, and an in-process Kubernetes API.

pub mod ecs_simulator;
pub mod kube_api;
pub mod metadata_simulator;
mod serve;
pub mod sts_simulator;
