using System.Collections.Concurrent;
using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;

namespace Broker.IntegrationTests.Sdk;

/// <summary>The hosted worker pool: it grows under a backlog, shrinks when idle, and finishes or releases its work at shutdown.</summary>
public sealed class WorkerPoolTests(SharedBroker shared) : IClassFixture<SharedBroker>
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    /// <summary>What the handlers did, shared with the test; handlers wait at <see cref="Gate"/> until the test opens it.</summary>
    public sealed class Probe
    {
        public TaskCompletionSource Gate { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public ConcurrentDictionary<long, int> Handled { get; } = new();
        public TaskCompletionSource FirstStarted { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public TaskCompletionSource AllRunning { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public int AllRunningAt = int.MaxValue;
        public int Running;
        public int MostRunning;
    }

    public sealed class GatedHandler(Probe probe) : IBrokerMessageHandler
    {
        public async Task HandleAsync(BrokerMessage message, CancellationToken cancellationToken)
        {
            int running = Interlocked.Increment(ref probe.Running);
            int most;
            while ((most = Volatile.Read(ref probe.MostRunning)) < running && Interlocked.CompareExchange(ref probe.MostRunning, running, most) != most)
            {
            }
            probe.FirstStarted.TrySetResult();
            if (running >= probe.AllRunningAt)
                probe.AllRunning.TrySetResult();
            try
            {
                await probe.Gate.Task.WaitAsync(cancellationToken);
                probe.Handled.AddOrUpdate(message.Offset, 1, (_, count) => count + 1);
            }
            finally
            {
                Interlocked.Decrement(ref probe.Running);
            }
        }
    }

    /// <summary>Throws on each message's first delivery, handles the second.</summary>
    public sealed class FlakyHandler(Probe probe) : IBrokerMessageHandler
    {
        public Task HandleAsync(BrokerMessage message, CancellationToken cancellationToken)
        {
            if (message.Attempt == 1)
                throw new InvalidOperationException("the database is locked");
            probe.Handled.AddOrUpdate(message.Offset, message.Attempt, (_, count) => count + 100);
            if (probe.Handled.Count == probe.AllRunningAt)
                probe.AllRunning.TrySetResult();
            return Task.CompletedTask;
        }
    }

    private (ServiceProvider Services, BrokerWorkerPool<GatedHandler> Pool, Probe Probe) Build(string topic, Action<BrokerWorkerOptions> configure)
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Worker:Listeners"] = shared.Broker.Host.Address.ToString(),
            ["Worker:Topic"] = topic,
            ["Worker:MinHandlers"] = "1",
            ["Worker:MaxHandlers"] = "4",
        }).Build();
        var probe = new Probe();
        var services = new ServiceCollection()
            .AddLogging()
            .AddSingleton(probe)
            .AddBrokerWorker<GatedHandler>(configuration.GetSection("Worker"), options =>
            {
                options.ScaleInterval = TimeSpan.FromMilliseconds(100);
                configure(options);
            })
            .BuildServiceProvider();
        return (services, services.GetRequiredService<BrokerWorkerPool<GatedHandler>>(), probe);
    }

    private static Task<BrokerWorkerState> StateAsync(BrokerWorkerPool<GatedHandler> pool, Func<BrokerWorkerState, bool> condition)
    {
        var reached = new TaskCompletionSource<BrokerWorkerState>(TaskCreationOptions.RunContinuationsAsynchronously);
        pool.StateChanged += state =>
        {
            if (condition(state))
                reached.TrySetResult(state);
        };
        if (condition(pool.State))
            reached.TrySetResult(pool.State);
        return reached.Task.WaitAsync(Deadline);
    }

    [Fact]
    public async Task The_pool_grows_to_its_maximum_under_a_backlog_and_shrinks_to_its_minimum_when_idle()
    {
        string topic = await shared.NewTopicAsync("pool");
        await shared.Client.PublishAsync(topic, Enumerable.Range(0, 200).Select(i => OutgoingMessage.FromText(i.ToString())));
        var (services, pool, probe) = Build(topic, o => o.BacklogPerHandler = 20);
        probe.AllRunningAt = 4;
        await using var _ = services;

        var grown = StateAsync(pool, s => s.Handlers == 4 && s.Busy == 4);
        await pool.StartAsync(CancellationToken.None);
        Assert.Equal(200, (await grown).Backlog);   // 200 / 20 = 10 handlers wanted, at most 4
        await probe.AllRunning.Task.WaitAsync(Deadline);

        var shrunk = StateAsync(pool, s => s.Handlers == 1 && s.Handled == 200 && s.Backlog == 0);
        probe.Gate.SetResult();
        await shrunk;
        await pool.StopAsync(CancellationToken.None);

        Assert.Equal(4, probe.MostRunning);
        Assert.Equal(Enumerable.Range(0, 200).Select(i => (long)i), probe.Handled.Keys.Order());
        Assert.All(probe.Handled.Values, count => Assert.Equal(1, count));
        var group = (await shared.Client.DescribeTopicAsync(topic)).Groups.Single();
        Assert.Equal((0UL, 0UL), (group.Backlog, group.InFlight));
    }

    [Fact]
    public async Task Shutdown_stops_taking_work_lets_running_handlers_finish_and_releases_the_rest()
    {
        string topic = await shared.NewTopicAsync("pool-stop");
        await shared.Client.PublishAsync(topic, Enumerable.Range(0, 10).Select(i => OutgoingMessage.FromText(i.ToString())));
        var (services, pool, probe) = Build(topic, o => { o.MinHandlers = 1; o.MaxHandlers = 1; });
        await using var _ = services;
        await pool.StartAsync(CancellationToken.None);
        await probe.FirstStarted.Task.WaitAsync(Deadline);

        var stopping = pool.StopAsync(CancellationToken.None);
        await StateAsync(pool, s => s.Stopping);
        Assert.False(stopping.IsCompleted);   // waits for the running handler
        probe.Gate.SetResult();
        await stopping.WaitAsync(Deadline);

        Assert.Equal(0L, Assert.Single(probe.Handled.Keys));
        var group = (await shared.Client.DescribeTopicAsync(topic)).Groups.Single();
        Assert.Equal((9UL, 0UL), (group.Backlog, group.InFlight));
    }

    [Fact]
    public async Task A_handler_still_running_when_the_shutdown_timeout_ends_is_cancelled_and_its_message_released()
    {
        string topic = await shared.NewTopicAsync("pool-abort");
        await shared.Client.PublishAsync(topic, [OutgoingMessage.FromText("never finishes")]);
        var (services, pool, probe) = Build(topic, o => { o.MinHandlers = 1; o.MaxHandlers = 1; });
        await using var _ = services;
        await pool.StartAsync(CancellationToken.None);
        await probe.FirstStarted.Task.WaitAsync(Deadline);

        await pool.StopAsync(new CancellationToken(canceled: true)).WaitAsync(Deadline);

        Assert.Empty(probe.Handled);
        var group = (await shared.Client.DescribeTopicAsync(topic)).Groups.Single();
        Assert.Equal((1UL, 0UL), (group.Backlog, group.InFlight));
    }

    [Fact]
    public async Task A_handler_that_throws_has_its_message_nacked_and_handled_again()
    {
        string topic = await shared.NewTopicAsync("pool-retry");
        await shared.Client.PublishAsync(topic, Enumerable.Range(0, 5).Select(i => OutgoingMessage.FromText(i.ToString())));
        var probe = new Probe { AllRunningAt = 5 };
        await using var services = new ServiceCollection()
            .AddLogging()
            .AddSingleton(probe)
            .AddBrokerWorker<FlakyHandler>(options =>
            {
                options.Client = new BrokerClientOptions { Listeners = shared.Broker.Host.Address.ToString(), Topic = topic };
                options.RetryDelay = TimeSpan.FromMilliseconds(200);
            })
            .BuildServiceProvider();
        var pool = services.GetRequiredService<BrokerWorkerPool<FlakyHandler>>();
        await pool.StartAsync(CancellationToken.None);

        await probe.AllRunning.Task.WaitAsync(Deadline);
        await pool.StopAsync(CancellationToken.None);

        // Each message handled once, on its second delivery (the nack counted as a failed delivery).
        Assert.Equal(Enumerable.Range(0, 5).Select(i => (long)i), probe.Handled.Keys.Order());
        Assert.All(probe.Handled.Values, attempt => Assert.Equal(2, attempt));
        var group = (await shared.Client.DescribeTopicAsync(topic)).Groups.Single();
        Assert.Equal((0UL, 0UL, 5UL), (group.Backlog, group.InFlight, group.RedeliveredTotal));
    }
}
