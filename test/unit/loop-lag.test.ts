// Back-pressure reads the sustained event-loop lag: one stall shows in the gauge but refuses
// nothing; a loop that stays behind does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LoopLag } from '../../loop-lag.js';

const block = (ms: number) => {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // busy: the loop cannot run the lag timer meanwhile
  }
};
const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('one stall raises the worst lag but not the sustained lag; a loop that stays behind raises both', async () => {
  const lag = new LoopLag();
  lag.start();
  try {
    await tick(1100); // ten quiet ticks
    block(700);
    await tick(150);
    assert.ok(lag.ms >= 600, `worst lag ${lag.ms}`);
    assert.ok(lag.sustainedMs < 500, `sustained lag ${lag.sustainedMs} after one stall`);
    // A loop that stays behind: every tick fires late.
    for (let i = 0; i < 12; i++) {
      block(650);
      await tick(1);
    }
    assert.ok(lag.sustainedMs > 500, `sustained lag ${lag.sustainedMs} while every tick is late`);
  } finally {
    lag.stop();
  }
});
