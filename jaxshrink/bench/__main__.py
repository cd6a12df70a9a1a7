"""`python -m jaxshrink.bench`: the training-step benchmark (`jaxshrink.bench.speed`)."""

from jaxshrink.bench import speed

if __name__ == "__main__":
    speed.main()
