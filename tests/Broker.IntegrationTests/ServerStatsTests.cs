using Broker.Client;
using Broker.IntegrationTests.Infrastructure;

namespace Broker.IntegrationTests;

public sealed class ServerStatsTests(SharedBroker shared) : IClassFixture<SharedBroker>
{
    private BrokerClient Client => shared.Client;

    [Fact]
    public async Task Server_stats_count_up_from_process_start_and_see_the_work_between_two_calls()
    {
        string topic = await shared.NewTopicAsync();
        var before = await Client.GetServerStatsAsync();

        // 64 messages of 16 KiB: the broker copies each payload at least once (the request's parse), so at least
        // 1 MiB must have been allocated between the two calls.
        var payload = new byte[16 << 10];
        await Client.PublishAsync(topic, Enumerable.Range(0, 64).Select(_ => new OutgoingMessage(payload)));
        var after = await Client.GetServerStatsAsync();

        Assert.True(before.UptimeMs > 0);
        Assert.True(before.WorkingSetBytes > 0);
        Assert.True(before.HeapBytes > 0);
        Assert.True(before.ThreadPoolThreads > 0);
        Assert.True(after.UptimeMs >= before.UptimeMs);
        Assert.True(after.CpuTimeMs >= before.CpuTimeMs);
        Assert.True(after.AllocatedBytes - before.AllocatedBytes >= (ulong)(64 * payload.Length),
            $"allocated {after.AllocatedBytes - before.AllocatedBytes} bytes for {64 * payload.Length} bytes of payload");
        Assert.True(after.ThreadPoolWorkItems > before.ThreadPoolWorkItems);
        Assert.True(after.Gen0Collections >= after.Gen1Collections && after.Gen1Collections >= after.Gen2Collections);
        Assert.True(after.Gen0Collections >= before.Gen0Collections);
        Assert.True(after.GcPauseMs >= before.GcPauseMs);
        Assert.True(after.LockContentions >= before.LockContentions);
        Assert.True(after.OpenTopics >= 1, "the topic just published to is open");
        Assert.True(before.JitCompiledMethods > 0, "a running broker has compiled its startup code");
        Assert.True(after.JitCompiledMethods >= before.JitCompiledMethods && after.JitTimeMs >= before.JitTimeMs);
    }
}
