#![cfg(feature = "paystack")]
