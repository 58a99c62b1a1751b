import re, sys
p = sys.argv[1]
names = [l.strip() for l in open(sys.argv[2]) if l.strip()]
src = open(p).read()
n = 0
for name in names:
    pat = re.compile(r'(void ' + re.escape(name) + r'\([^)]*\) \{\n  PROTECT\(\n)(.*?)(\n  \)\n\})', re.S)
    src, k = pat.subn(lambda m: m.group(1) + '    throw std::runtime_error("' + name + ': not available (torch-sys 0.26 patched for libtorch 2.11)");' + m.group(3), src)
    assert k == 1, (name, k)
    n += k
open(p, 'w').write(src)
print("patched", n)
