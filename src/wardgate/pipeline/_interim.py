"""TEMPORARY permissive policy and identity masking, used only until the policy and
masking packages land. Removed at integration."""

from wardgate.pipeline.command import Command, Decision, Verdict


class PermissivePolicy:
    def __init__(self, *a, **k): ...

    def session(self, info):
        self.info = info
        return self

    def evaluate(self, text, *, via="simple", parameters=()):
        import pglast

        try:
            parts = pglast.split(text) or (text,)
        except Exception:
            parts = (text,)
        return [
            (
                Command(self.info, p, tuple(parameters), i, via),
                Decision(Verdict.ALLOW, "interim/allow"),
            )
            for i, p in enumerate(parts)
        ]


def wardgate_setting(sql):
    return None


class NoMasking:
    def __init__(self, *a, **k): ...

    def mask_text(self, text, directives):
        return text, {}

    def plan(self, directives, columns):
        return None
