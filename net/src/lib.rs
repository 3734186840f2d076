//! velox-net
