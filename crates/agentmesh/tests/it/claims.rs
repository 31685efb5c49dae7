//! Claims of the README and SECURITY.md that no other test proved: each test names the claim.
