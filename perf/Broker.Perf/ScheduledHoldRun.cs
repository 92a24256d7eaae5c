using System.Diagnostics;
using Broker.Protocol.V1;
using Google.Protobuf;
using Grpc.Net.Client;

namespace Broker.Perf;

/// <summary>
/// S1: what holding scheduled messages costs. Publishes <see cref="PerfSettings.Messages"/> messages (default 1M) each
/// scheduled <see cref="PerfSettings.DelayMs"/> ahead (an hour by default; 0 for the same run with plain messages), with no consumer, then reads the broker's RSS and GC heap; SIGKILLs it, restarts it on the
/// same data and measures the restart (the scan that finds the pending records again) and the RSS after it.
/// Issue 16's goal: 1M scheduled messages hold the broker under 300 MiB.
/// </summary>
internal static class ScheduledHoldRun
{
    public static async Task RunAsync(PerfSettings settings, string? brokerArguments, CancellationToken cancellationToken)
    {
        await using var broker = await BrokerUnderTest.StartAsync(brokerArguments);
        const string topic = "scheduled-hold";
        using (var client = new Broker.Client.BrokerClient(broker.Address))
            await client.CreateTopicAsync(topic, cancellationToken: cancellationToken);
        var payload = new byte[settings.PayloadBytes];
        Random.Shared.NextBytes(payload);
        var clock = Stopwatch.StartNew();
        long next = 0;
        using (var channel = GrpcChannel.ForAddress(broker.Address))
        {
            var publisher = new Publisher.PublisherClient(channel);
            await Task.WhenAll(Enumerable.Range(0, settings.Producers * settings.PublishWindow).Select(_ => Task.Run(async () =>
            {
                while (true)
                {
                    long first = Interlocked.Add(ref next, settings.BatchSize) - settings.BatchSize;
                    if (first >= settings.Messages)
                        return;
                    var request = new PublishRequest { Topic = topic };
                    for (long i = first; i < Math.Min(first + settings.BatchSize, settings.Messages); i++)
                        request.Messages.Add(new Message { Payload = UnsafeByteOperations.UnsafeWrap(payload), DelayMs = settings.DelayMs });
                    await publisher.PublishAsync(request, cancellationToken: cancellationToken);
                }
            }, cancellationToken)));
        }
        double publishSeconds = clock.Elapsed.TotalSeconds;
        await ReportAsync("after publishing", broker, topic, cancellationToken);
        Console.WriteLine($"published {settings.Messages:N0} scheduled messages in {publishSeconds:N1} s ({settings.Messages / publishSeconds:N0} msg/s)");

        var restart = await broker.KillAndRestartAsync();
        Console.WriteLine($"SIGKILL and restart: listening after {restart.TotalSeconds:N2} s");
        clock.Restart();
        await ReportAsync("after the restart", broker, topic, cancellationToken);
        Console.WriteLine($"topic open (scan for pending records included) and described in {clock.Elapsed.TotalSeconds:N2} s");
    }

    private static async Task ReportAsync(string when, BrokerUnderTest broker, string topic, CancellationToken cancellationToken)
    {
        using var client = new Broker.Client.BrokerClient(broker.Address);
        var description = await client.DescribeTopicAsync(topic, cancellationToken);
        // A full collection first, so the heap shows what is held rather than what waits to be collected.
        var stats = await client.GetServerStatsAsync(cancellationToken);
        Console.WriteLine($"{when}: {description.Scheduled:N0} scheduled pending; broker RSS {broker.RssSamples.LastOrDefault().Bytes / 1048576.0:N0} MiB "
            + $"(working set {stats.WorkingSetBytes / 1048576.0:N0} MiB, GC heap {stats.HeapBytes / 1048576.0:N0} MiB, log {description.LogBytes / 1048576.0:N0} MiB)");
    }
}
