"""Suite-wide settings: never let litellm reach the network, keep runs inside tmp dirs."""

import os

os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
