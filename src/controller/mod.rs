//! The controller: a pure decision core and the kube-runtime shell around it.

pub mod conditions;
pub mod decide;
