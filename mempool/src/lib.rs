//! velox-mempool
