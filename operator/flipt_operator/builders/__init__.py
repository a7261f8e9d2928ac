"""Pure functions that build documents (CRDs, Flipt config, manifests) from models. No I/O."""
