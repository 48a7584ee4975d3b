//! Front ends: each one only reads the model.

pub mod batch;
