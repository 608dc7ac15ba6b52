//! The MySQL/MariaDB dialect (next commit).
