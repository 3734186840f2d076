//! velox-tuning
