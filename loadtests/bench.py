"""placeholder"""


def add_flags(p):
    pass


def main(args):
    return 0
