//! Embedded stand-ins for the services the operator talks to: the ECS simulator and an in-process Kubernetes API.

pub mod ecs_simulator;
pub mod kube_api;
pub mod metadata_simulator;
pub mod sts_simulator;
