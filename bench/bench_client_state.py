"""The cost of sealing and opening the client channel's 2026-07-28 `requestState` (AES-256-GCM, the SDK's codec
under holdgate's derived key): p50 of each, in microseconds, and the token's length. In-process, no database (the
single-use insert is one more statement on the retry, like any write).

Usage: python bench/bench_client_state.py [--rounds 5000]
"""

from __future__ import annotations

import argparse
import statistics
import time

from pydantic import SecretStr

from service.gateway.sealed_state import ClientState, state_security


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5000)
    rounds = parser.parse_args().rounds
    security = state_security(SecretStr("k" * 40), lambda ctx: None)
    plain = ClientState.new("d_" + "x" * 20, "agent", "form").plaintext().encode()
    sealing, opening = [], []
    token = ""
    for _ in range(rounds):
        started = time.perf_counter()
        token = security.codec.seal(plain)
        sealing.append(time.perf_counter() - started)
        started = time.perf_counter()
        security.codec.unseal(token)
        opening.append(time.perf_counter() - started)
    print(
        f"seal p50 {statistics.median(sealing) * 1e6:.1f} us, open p50 {statistics.median(opening) * 1e6:.1f} us, "
        f"token {len(token)} characters ({rounds} rounds)"
    )


if __name__ == "__main__":
    main()
