// Floors measured with the rows (the OMEMO benches, legacy and OMEMO 2): each row's floor operations
// timed in blocks between the row's own samples (same sizes), so that a row and its floor see the
// same machine load. Per device where the row is: an operation listed in `perCall` covers that many
// devices per call (a message to three devices), and its samples are divided by it.
export class Interleaved<Row extends string, Op extends string> {
  readonly samples = {} as Record<Row, number[]>;
  readonly #calls = new Map<Op, number>();
  constructor(
    readonly ops: Record<Op, (i: number) => void>,
    readonly of: Record<Row, Op>,
    readonly perCall: Partial<Record<Op, number>> = {},
  ) {
    // Warm every operation once in its own stretch (JIT, key caches), as the floors alone did.
    for (const op of new Set(Object.values(of) as Op[])) for (let i = 0; i < 50; i++) this.#call(op);
  }
  #call(op: Op): void {
    const i = this.#calls.get(op) ?? 0;
    this.#calls.set(op, i + 1);
    this.ops[op](i);
  }
  /** Times `count` calls of `row`'s floor. */
  run(row: Row, count: number): void {
    const op = this.of[row];
    const out = (this.samples[row] ??= []);
    const per = this.perCall[op] ?? 1;
    for (let k = 0; k < count; k++) {
      const t = performance.now();
      this.#call(op);
      out.push((performance.now() - t) / per);
    }
  }
}
