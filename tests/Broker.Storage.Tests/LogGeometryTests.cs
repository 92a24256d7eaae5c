using Broker.Storage.Logs;
using FASTER.core;

namespace Broker.Storage.Tests;

/// <summary>
/// How many pages a log keeps in memory is not part of its data: topics written while they kept two pages open with
/// four (the size full-size topics get now), and the other way round.
/// </summary>
public sealed class LogGeometryTests : IDisposable
{
    private readonly TempDirectory _data = new();

    public void Dispose() => _data.Dispose();

    [Theory]
    [InlineData(1, 2)]
    [InlineData(2, 1)]
    public async Task A_log_reads_back_whole_with_another_number_of_pages_in_memory(int writtenWithPageBits, int readWithPageBits)
    {
        // 2,000 entries of about 1 KiB on 64 KiB pages: many page turns, many pages flushed out of memory. Each starts
        // with 0x01: first bytes 0xF0 and 0xF1 mark fragments of larger entries.
        var entries = Enumerable.Range(0, 2_000)
            .Select(i => Enumerable.Range(0, 1000 + i % 50).Select(b => b == 0 ? (byte)1 : (byte)(b + i)).ToArray())
            .ToList();
        using var disk = new StoreDisk(maxConcurrentCommits: 2, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        await using (var log = DurableLog.Open(_data.Path, Geometry(writtenWithPageBits), disk))
        {
            foreach (var chunk in entries.Chunk(50))
            {
                long end = log.Append(chunk, static (byte[][] batch, ref AppendScope scope) =>
                {
                    foreach (var entry in batch)
                        scope.Enqueue(new RawEntry(entry));
                    return scope.TailAddress;
                });
                await log.WaitForDurableAsync(end);
            }
        }

        await using (var log = DurableLog.Open(_data.Path, Geometry(readWithPageBits), disk))
        {
            var read = new List<byte[]>();
            await foreach (var (entry, length, _) in log.ReadRangeAsync(log.BeginAddress, log.Durable.Address))
                read.Add(entry.AsSpan(0, length).ToArray());
            Assert.Equal(entries, read);
        }
    }

    private static LogGeometry Geometry(int memoryPageBits) =>
        memoryPageBits == 1 ? LogGeometry.TwoPages(16, 20) : LogGeometry.FourPages(16, 20);

    private readonly struct RawEntry(byte[] bytes) : ILogEnqueueEntry
    {
        public int SerializedLength => bytes.Length;

        public void SerializeTo(Span<byte> destination) => bytes.CopyTo(destination);
    }
}
