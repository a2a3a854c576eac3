"""The smallest app: a few functions, an exception raised and caught, one line of output."""


class Oops(Exception):
    pass


def square(x):
    return x * x


def risky(x):
    if x > 2:
        raise Oops(f"too big: {x}")
    return x


def main():
    total = 0
    for x in range(5):
        try:
            total += risky(x)
        except Oops:
            total += square(x)
    print(f"tiny: result {total}", flush=True)


if __name__ == "__main__":
    main()
