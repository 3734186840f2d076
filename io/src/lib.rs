//! velox-io
