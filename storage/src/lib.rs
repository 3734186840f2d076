//! velox-storage
