using Broker.Storage.Topics;

namespace Broker.Storage.Tests;

public sealed class ScheduleHeapTests
{
    [Fact]
    public void Records_come_out_by_delivery_time_across_chunks_with_pushes_and_pops_interleaved()
    {
        var heap = new ScheduleHeap();
        var reference = new PriorityQueue<PendingRecord, long>();
        var random = new Random(7);
        for (int step = 0; step < 20_000; step++)
        {
            if (heap.Count == 0 || random.Next(3) > 0)
            {
                var record = new PendingRecord(random.NextInt64(1_000_000), step, 64 + 100L * step);
                heap.Push(record);
                reference.Enqueue(record, record.DeliverAtUnixMs);
            }
            else
            {
                Assert.Equal(reference.Dequeue().DeliverAtUnixMs, heap.Pop().DeliverAtUnixMs);
            }
            Assert.Equal(reference.Count, heap.Count);
        }
        Assert.True(heap.Count > 5_000, "the test meant the heap to span several chunks");
        Assert.Equal(reference.UnorderedItems.Min(i => i.Element.Address), heap.LowestAddress(long.MaxValue));
        Assert.Equal(reference.Count, heap.Unordered().Count());
        long last = long.MinValue;
        while (heap.Count > 0)
        {
            var record = heap.Pop();
            Assert.True(record.DeliverAtUnixMs >= last);
            last = record.DeliverAtUnixMs;
        }
        Assert.False(heap.TryPeek(out _));
        Assert.Equal(99, heap.LowestAddress(99));
    }
}

public sealed class ChunkedQueueTests
{
    [Fact]
    public void Items_come_out_in_order_across_chunks_with_enqueues_and_dequeues_interleaved_and_after_emptying()
    {
        var queue = new ChunkedQueue<(long, long)>();
        var reference = new Queue<(long, long)>();
        var random = new Random(3);
        for (int step = 0; step < 30_000; step++)
        {
            if (reference.Count == 0 || random.Next(5) < 3)
            {
                queue.Enqueue((step, -step));
                reference.Enqueue((step, -step));
            }
            else
            {
                Assert.Equal(reference.Dequeue(), queue.Dequeue());
            }
            Assert.Equal(reference.Count, queue.Count);
            Assert.Equal(reference.TryPeek(out var expected), queue.TryPeek(out var actual));
            Assert.Equal(expected, actual);
            if (step % 13 == 0)
            {
                // The head's items, across chunk boundaries, as many as fit or as there are.
                var head = new (long, long)[random.Next(1, 2500)];
                int copied = queue.PeekHead(head);
                Assert.Equal(Math.Min(head.Length, reference.Count), copied);
                Assert.Equal(reference.Take(copied), head.Take(copied));
            }
        }
        while (reference.Count > 0)
            Assert.Equal(reference.Dequeue(), queue.Dequeue());
        Assert.False(queue.TryPeek(out _));
        queue.Enqueue((1, 2));
        Assert.Equal((1L, 2L), queue.Dequeue());
    }
}
