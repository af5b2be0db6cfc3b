"""The command line answers a bad setting with one clear line and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys


def test_a_bad_setting_is_one_line_and_exit_2() -> None:
    env = {**os.environ, "GATEWAY_LOG_LEVEL": "chatty"}
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "GATEWAY_LOG_LEVEL must be one of" in done.stderr
    assert "Traceback" not in done.stderr
