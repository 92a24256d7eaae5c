using System.Diagnostics;
using Broker.Storage;
using Broker.Storage.Topics;
using HdrHistogram;

namespace Broker.Perf;

/// <summary>
/// The ceiling: the same durable appends straight into the storage layer (TopicStore, in this process), no gRPC,
/// no consumers. Producers append batches of the same size and wait for each to be durable, like Publish does.
/// </summary>
internal static class StorageOnlyRun
{
    public static async Task<(TimeSpan Elapsed, long Appended, LongConcurrentHistogram Latency)> RunAsync(PerfSettings settings)
    {
        ThreadPool.GetMinThreads(out int worker, out int io);
        ThreadPool.SetMinThreads(Math.Max(worker, 64), Math.Max(io, 64));
        string data = Path.Combine(Path.GetTempPath(), "broker-perf", Guid.NewGuid().ToString("N"));
        var latency = Histograms.Create();
        long next = 0, appended = 0;
        try
        {
            await using var store = await TopicStore.OpenAsync(new StorageOptions { DataDirectory = data });
            await store.CreateTopicAsync("ceiling", false, default);
            var topic = await store.GetTopicAsync("ceiling");
            var clock = Stopwatch.StartNew();
            var writers = Enumerable.Range(0, settings.Producers * settings.PublishWindow).Select(_ => Task.Run(async () =>
            {
                while (true)
                {
                    long first = Interlocked.Add(ref next, settings.BatchSize) - settings.BatchSize;
                    int count = (int)Math.Clamp(settings.Messages - first, 0, settings.BatchSize);
                    if (count == 0)
                        return;
                    long timestamp = Payloads.Now();
                    var batch = Enumerable.Range(0, count)
                        .Select(i => AppendMessage.FromPayload(Payloads.Create(first + i, settings.PayloadBytes, timestamp)))
                        .ToList();
                    await topic.AppendAsync(batch);
                    latency.RecordValueWithCount(Histograms.MicrosecondsSince(timestamp), count);
                    Interlocked.Add(ref appended, count);
                }
            })).ToArray();
            await Task.WhenAll(writers);
            return (clock.Elapsed, appended, latency);
        }
        finally
        {
            if (Directory.Exists(data))
                Directory.Delete(data, recursive: true);
        }
    }
}
