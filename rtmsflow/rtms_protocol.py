# Moved to the `rtms_protocol` package. Kept only while ingest/rtms_client.py, ingest/sdk_backend.py,
# emulator/cli.py and their tests still import it from here; `Codec` is PayloadType's old name.
from rtms_protocol import *  # noqa: F403
from rtms_protocol import PayloadType as Codec  # noqa: F401
