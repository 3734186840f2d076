//! velox-dag
