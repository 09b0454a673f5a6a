"""Send the example tasks to a running worker and print the results.

    python -m examples.send
"""

from __future__ import annotations

from .tasks import add, flaky_fetch, slow_square


def main() -> None:
    print("add(2, 3) =", add.delay(2, 3).get(timeout=10))
    squares = [slow_square.delay(n) for n in range(8)]
    print("squares   =", [result.get(timeout=10) for result in squares])
    print("flaky     =", flaky_fetch.delay("http://example.invalid").get(timeout=20))


if __name__ == "__main__":
    main()
