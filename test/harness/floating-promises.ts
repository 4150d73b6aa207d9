// A type-aware lint for discarded promises, over the TypeScript program of tsconfig.build.json (the
// gateway's own code). A rejected promise nobody handles reaches the process-wide handler, which
// once let one stanza end the process (issue 15). Reported:
//   - a promise-valued expression statement (`f();` where f returns a promise), `void f()` included;
//   - `.then(onFulfilled)` without a rejection handler, and `.finally(...)`, as the end of a chain;
//   - an async function (or any function returning a promise) handed where a function returning
//     void is expected: event-emitter listeners, timers, callbacks of interfaces typed `=> void`.
// Not reported: a chain ending in `.catch(...)` or `.then(a, b)`, awaited or returned promises.
import ts from 'typescript';
import { dirname, relative } from 'node:path';

export interface Finding {
  file: string;
  line: number;
  text: string;
  rule: 'floating' | 'void-promise' | 'promise-to-void-callback';
}

function isThenable(checker: ts.TypeChecker, t: ts.Type): boolean {
  if (t.isUnion()) return t.types.some((u) => isThenable(checker, u));
  const then = t.getProperty('then');
  if (!then) return false;
  const decl = then.valueDeclaration ?? then.declarations?.[0];
  if (!decl) return false;
  return checker.getTypeOfSymbolAtLocation(then, decl).getCallSignatures().length > 0;
}

/** Whether a chain's last call handles rejection (`.catch(h)`, `.then(a, b)`). */
function handlesRejection(e: ts.Expression): boolean {
  if (!ts.isCallExpression(e) || !ts.isPropertyAccessExpression(e.expression)) return false;
  const name = e.expression.name.text;
  if (name === 'catch') return e.arguments.length >= 1;
  if (name === 'then') return e.arguments.length >= 2;
  return false;
}

function strip(e: ts.Expression): ts.Expression {
  while (ts.isParenthesizedExpression(e) || ts.isAsExpression(e) || ts.isNonNullExpression(e)) e = e.expression;
  return e;
}

/** Whether every call signature of a contextual function type returns something that is not a promise. */
function expectsNonPromise(checker: ts.TypeChecker, contextual: ts.Type): boolean {
  const sigs = contextual.getNonNullableType().getCallSignatures();
  if (sigs.length === 0) return false;
  return sigs.every((s) => {
    const r = s.getReturnType();
    if (r.flags & (ts.TypeFlags.Any | ts.TypeFlags.Unknown)) return false;
    return !isThenable(checker, r);
  });
}

/** The type a function expression or object-literal method is expected to have, if any. */
function contextualFunctionType(checker: ts.TypeChecker, node: ts.ArrowFunction | ts.FunctionExpression | ts.MethodDeclaration, sf: ts.SourceFile): ts.Type | undefined {
  if (!ts.isMethodDeclaration(node)) return checker.getContextualType(node);
  if (!ts.isObjectLiteralExpression(node.parent)) return undefined;
  const prop = checker.getContextualType(node.parent)?.getProperty(node.name.getText(sf));
  return prop ? checker.getTypeOfSymbolAtLocation(prop, node) : undefined;
}

export function findFloatingPromises(tsconfigPath: string): Finding[] {
  const parsed = ts.getParsedCommandLineOfConfigFile(tsconfigPath, {}, {
    ...ts.sys,
    onUnRecoverableConfigFileDiagnostic: (d) => {
      throw new Error(ts.flattenDiagnosticMessageText(d.messageText, '\n'));
    },
  });
  if (!parsed) throw new Error(`cannot read ${tsconfigPath}`);
  const program = ts.createProgram({ rootNames: parsed.fileNames, options: { ...parsed.options, noEmit: true } });
  const checker = program.getTypeChecker();
  const root = dirname(tsconfigPath);
  const out: Finding[] = [];
  for (const sf of program.getSourceFiles()) {
    if (sf.isDeclarationFile || sf.fileName.includes('/node_modules/')) continue;
    const report = (node: ts.Node, rule: Finding['rule']) => {
      const { line } = sf.getLineAndCharacterOfPosition(node.getStart(sf));
      out.push({ file: relative(root, sf.fileName), line: line + 1, text: node.getText(sf).split('\n')[0]!.slice(0, 120), rule });
    };
    const visit = (node: ts.Node): void => {
      if (ts.isExpressionStatement(node)) {
        const e = strip(node.expression);
        if (ts.isVoidExpression(e)) {
          const inner = strip(e.expression);
          if (isThenable(checker, checker.getTypeAtLocation(inner)) && !handlesRejection(inner)) report(node, 'void-promise');
        } else if (!ts.isBinaryExpression(e) && isThenable(checker, checker.getTypeAtLocation(e)) && !handlesRejection(e)) {
          report(node, 'floating');
        }
      }
      if ((ts.isArrowFunction(node) || ts.isFunctionExpression(node) || ts.isMethodDeclaration(node)) && node.parent) {
        const contextual = contextualFunctionType(checker, node, sf);
        const sig = checker.getSignatureFromDeclaration(node);
        if (contextual && sig && isThenable(checker, sig.getReturnType()) && expectsNonPromise(checker, contextual)) {
          report(node, 'promise-to-void-callback');
        }
      }
      ts.forEachChild(node, visit);
    };
    visit(sf);
  }
  return out;
}
