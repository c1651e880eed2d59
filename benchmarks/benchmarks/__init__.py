"""asv suites of fastmlp (SPEC section 12), parametrised over the registered backends."""
