"""Pure decisions: validation of referenced data and Flipt's rules. No I/O."""
